(define (problem vlmrl_pick_two_obj_and_place_CellPhone_None_Desk_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        loc_bar_1 - location
        loc_bar_2 - location
        loc_bar_3 - location
        loc_bar_4 - location
        loc_bar_5 - location
        loc_bar_6 - location
        Desk_bar_1 - receptacle
        SideTable_bar_1 - receptacle
        Bed_bar_1 - receptacle
        Drawer_bar_1 - receptacle
        Shelf_bar_1 - receptacle
        Dresser_bar_1 - receptacle
        DeskLamp_bar_1 - object
        Book_bar_1 - object
        CD_bar_1 - object
        Pen_bar_1 - object
        AlarmClock_bar_1 - object
        CellPhone_bar_1 - object
        KeyChain_bar_1 - object
        CellPhone_bar_2 - object
        AlarmClockType - otype
        BookType - otype
        CDType - otype
        CellPhoneType - otype
        DeskLampType - otype
        KeyChainType - otype
        PenType - otype
        BedType - rtype
        DeskType - rtype
        DrawerType - rtype
        DresserType - rtype
        ShelfType - rtype
        SideTableType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType Desk_bar_1 DeskType)
        (receptacleAtLocation Desk_bar_1 loc_bar_1)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_2)
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_3)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_4)
        (openable Drawer_bar_1)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_5)
        (receptacleType Dresser_bar_1 DresserType)
        (receptacleAtLocation Dresser_bar_1 loc_bar_6)
        (objectType DeskLamp_bar_1 DeskLampType)
        (inReceptacle DeskLamp_bar_1 SideTable_bar_1)
        (objectAtLocation DeskLamp_bar_1 loc_bar_2)
        (toggleable DeskLamp_bar_1)
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 Bed_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_3)
        (pickupable Book_bar_1)
        (objectType CD_bar_1 CDType)
        (inReceptacle CD_bar_1 Drawer_bar_1)
        (objectAtLocation CD_bar_1 loc_bar_4)
        (pickupable CD_bar_1)
        (objectType Pen_bar_1 PenType)
        (inReceptacle Pen_bar_1 Desk_bar_1)
        (objectAtLocation Pen_bar_1 loc_bar_1)
        (pickupable Pen_bar_1)
        (objectType AlarmClock_bar_1 AlarmClockType)
        (inReceptacle AlarmClock_bar_1 Shelf_bar_1)
        (objectAtLocation AlarmClock_bar_1 loc_bar_5)
        (pickupable AlarmClock_bar_1)
        (objectType CellPhone_bar_1 CellPhoneType)
        (inReceptacle CellPhone_bar_1 Dresser_bar_1)
        (objectAtLocation CellPhone_bar_1 loc_bar_6)
        (pickupable CellPhone_bar_1)
        (objectType KeyChain_bar_1 KeyChainType)
        (inReceptacle KeyChain_bar_1 Desk_bar_1)
        (objectAtLocation KeyChain_bar_1 loc_bar_1)
        (pickupable KeyChain_bar_1)
        (objectType CellPhone_bar_2 CellPhoneType)
        (inReceptacle CellPhone_bar_2 Bed_bar_1)
        (objectAtLocation CellPhone_bar_2 loc_bar_3)
        (pickupable CellPhone_bar_2)
        (canContain BedType AlarmClockType)
        (canContain BedType BookType)
        (canContain BedType CDType)
        (canContain BedType CellPhoneType)
        (canContain BedType DeskLampType)
        (canContain BedType KeyChainType)
        (canContain BedType PenType)
        (canContain DeskType AlarmClockType)
        (canContain DeskType BookType)
        (canContain DeskType CDType)
        (canContain DeskType CellPhoneType)
        (canContain DeskType DeskLampType)
        (canContain DeskType KeyChainType)
        (canContain DeskType PenType)
        (canContain DrawerType AlarmClockType)
        (canContain DrawerType BookType)
        (canContain DrawerType CDType)
        (canContain DrawerType CellPhoneType)
        (canContain DrawerType DeskLampType)
        (canContain DrawerType KeyChainType)
        (canContain DrawerType PenType)
        (canContain DresserType AlarmClockType)
        (canContain DresserType BookType)
        (canContain DresserType CDType)
        (canContain DresserType CellPhoneType)
        (canContain DresserType DeskLampType)
        (canContain DresserType KeyChainType)
        (canContain DresserType PenType)
        (canContain ShelfType AlarmClockType)
        (canContain ShelfType BookType)
        (canContain ShelfType CDType)
        (canContain ShelfType CellPhoneType)
        (canContain ShelfType DeskLampType)
        (canContain ShelfType KeyChainType)
        (canContain ShelfType PenType)
        (canContain SideTableType AlarmClockType)
        (canContain SideTableType BookType)
        (canContain SideTableType CDType)
        (canContain SideTableType CellPhoneType)
        (canContain SideTableType DeskLampType)
        (canContain SideTableType KeyChainType)
        (canContain SideTableType PenType)
    )
(:goal
                    (and
                        (exists (?r - receptacle)
                            (exists (?o1 - object)
                                (and
                                    (objectType ?o1 CellPhoneType)
                                    (receptacleType ?r DeskType)
                                    (inReceptacle ?o1 ?r)
                                    (exists (?o2 - object)
                                        (and
                                            (not (= ?o1 ?o2))
                                            (objectType ?o2 CellPhoneType)
                                            (receptacleType ?r DeskType)
                                            (inReceptacle ?o2 ?r)
                                        )
                                    )
                                )
                            )
                        )
                    )
                )
            )
